_pyrsia_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _PYRSIA_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _pyrsia_completion pyrsia
